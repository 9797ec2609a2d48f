"""Emergency plans (应急预案): plans as versioned data, their activation on a case or an area (groups,
orders, the video consultation, notices, a timed checklist), notices that reach people, and warnings
in (CAP 1.2). See docs/plans.md."""
