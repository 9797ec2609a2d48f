-- track_points partitioned by month of the fix time (dispatchd/store/partitions.py), so that a month
-- is dropped whole past [units] track_retention_days and a track query reads only its months.
--
-- The rows written so far stay where they are: the old table becomes the partition of everything
-- before the first of the month after its newest row (and after now), checked by a constraint,
-- not copied. The next months get their own partitions here and from the daemon's round; a row no
-- month holds (far in the past or future) goes to the DEFAULT partition track_points_other.

ALTER TABLE track_points RENAME TO track_points_before;
ALTER INDEX track_points_unit_at RENAME TO track_points_before_unit_at;

CREATE TABLE track_points (
    unit_id      bigint NOT NULL,
    device_id    bigint NOT NULL,
    at           timestamptz NOT NULL,      -- fix time (UTC)
    lat          double precision NOT NULL, -- WGS-84
    lon          double precision NOT NULL,
    speed_kmh    real,
    heading      real,
    altitude_m   real,
    accuracy_m   real,
    battery      real,
    source       text NOT NULL,             -- osmand | jt808 | squad (browser geolocation)
    received_at  timestamptz NOT NULL
) PARTITION BY RANGE (at);
CREATE INDEX track_points_unit_at ON track_points (unit_id, at);

-- Attaches <tbl>_before (the old rows) to the partitioned <tbl> as the partition of everything
-- before the first of the month after its newest row (and after now), makes the three months from
-- there and the DEFAULT partition <tbl>_other. The constraint checked first lets ATTACH skip its own
-- scan: this is the only pass over the old rows. Also used by 0017 for the audit log.
CREATE FUNCTION dispatchd_partition_by_month(tbl text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    newest timestamptz;
    boundary timestamptz;
    month timestamptz;
BEGIN
    EXECUTE format('SELECT greatest(now(), (SELECT max(at) FROM %I))', tbl || '_before') INTO newest;
    boundary := date_trunc('month', newest AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 month';
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (at < %L)', tbl || '_before', tbl || '_before_range', boundary);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)', tbl, tbl || '_before', boundary);
    FOR i IN 0..2 LOOP
        month := boundary + make_interval(months => i);
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            tbl || '_p' || to_char(month AT TIME ZONE 'UTC', 'YYYYMM'), tbl, month, month + interval '1 month'
        );
    END LOOP;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_other', tbl);
END
$$;

SELECT dispatchd_partition_by_month('track_points');
