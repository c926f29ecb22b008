-- owner: activity
-- Activity made before the app index was partial (0011 makes it partial from the start).
DROP INDEX IF EXISTS activity_app;
