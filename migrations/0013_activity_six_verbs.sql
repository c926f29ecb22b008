-- owner: activity
-- Once: records and rollups from before deploys and undeploys were recorded with the reference's verbs (as the
-- create and the delete of a deployment) are given them.
CREATE TABLE IF NOT EXISTS activity_migrations (name text PRIMARY KEY);
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM activity_migrations WHERE name = 'six-verbs') THEN
        UPDATE activity SET
            action = CASE action WHEN 'deploy' THEN 'create' ELSE 'delete' END,
            record = convert_to(jsonb_set(convert_from(record, 'UTF8')::jsonb, '{action}',
                to_jsonb(CASE action WHEN 'deploy' THEN 'create' ELSE 'delete' END))::text, 'UTF8')
        WHERE action IN ('deploy', 'undeploy');
        INSERT INTO activity_hourly AS h
            SELECT org_id, scope, scope_id, hour, CASE action WHEN 'deploy' THEN 'create' ELSE 'delete' END,
                resource_type, requests, successes, duration_ms, tokens
            FROM activity_hourly WHERE action IN ('deploy', 'undeploy')
        ON CONFLICT (org_id, scope, scope_id, hour, action, resource_type) DO UPDATE SET
            requests = h.requests + EXCLUDED.requests, successes = h.successes + EXCLUDED.successes,
            duration_ms = h.duration_ms + EXCLUDED.duration_ms, tokens = h.tokens + EXCLUDED.tokens;
        DELETE FROM activity_hourly WHERE action IN ('deploy', 'undeploy');
        INSERT INTO activity_migrations VALUES ('six-verbs') ON CONFLICT DO NOTHING;
    END IF;
END $$;
