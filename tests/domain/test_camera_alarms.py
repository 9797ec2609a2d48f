"""What a camera's alarm means (dispatchd.domain.camera_alarms.judge), without I/O: people's alarms and
video analysis of something happening open a case, faults are faults, motion detection is a note."""

from __future__ import annotations

from dispatchd.domain.camera_alarms import CROWD_CATEGORY, judge


def test_the_captured_hikvision_motion_alarm_is_only_a_note() -> None:
    """Method 5 (video), type 2 (运动目标检测), priority 4 — what the Hikvision capture sends — opens no case."""
    verdict = judge(5, 2, 4)
    assert (verdict.kind, verdict.name, verdict.priority) == ("note", "运动目标检测报警", None)


def test_intrusion_and_its_kind_open_a_case_with_the_alarms_priority() -> None:
    """Intrusion (5/6) at priority 1 is a P1 case of the configured category; tripwire, loitering, an
    object left or taken, wrong way and fast movement are cases too; priority 3 takes the default."""
    verdict = judge(5, 6, 1)
    assert (verdict.kind, verdict.name_en, verdict.priority, verdict.category) == ("case", "intrusion", "P1", None)
    assert all(judge(5, t, 3).kind == "case" for t in (1, 3, 4, 5, 7, 8, 12))
    assert judge(5, 5, 3).priority is None and judge(5, 5, 2).priority == "P2"


def test_a_crowd_is_a_stability_case_and_tampering_a_case() -> None:
    """Crowd density (5/10) goes to the crowding category; a device tampered with (2/2) is a case."""
    assert judge(5, 10, 2).category == CROWD_CATEGORY and judge(5, 10, 2).kind == "case"
    assert judge(2, 2, None).kind == "case"


def test_faults_and_unknown_codes() -> None:
    """Video lost, disk full, temperature and any method-6 alarm are faults; phone and SMS alarms are
    cases whatever their type; unknown methods and types are notes."""
    assert {judge(2, t, 1).kind for t in (1, 3, 4, 5)} == {"fault"}
    assert judge(6, 1, None).kind == judge(6, 99, None).kind == "fault"
    assert judge(1, None, 2).kind == judge(3, 7, None).kind == "case"
    assert judge(7, 1, 1).kind == judge(None, None, None).kind == judge(5, 99, 1).kind == "note"
