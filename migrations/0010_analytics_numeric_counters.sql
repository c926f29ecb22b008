-- owner: analytics
-- Views made before the counters were numeric (0009 makes them numeric from the start).
DO $$ BEGIN
    IF (SELECT atttypid FROM pg_attribute WHERE attrelid = to_regclass('rm_analytics_counters') AND attname = 'value')
        = 'bigint'::regtype THEN
        ALTER TABLE rm_analytics_counters ALTER COLUMN value TYPE numeric;
    END IF;
END $$;
