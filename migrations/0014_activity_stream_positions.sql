-- owner: activity
-- How far the activity consumer has stored a JetStream stream, written with the records it stored.
CREATE TABLE IF NOT EXISTS activity_stream_positions (
    stream text PRIMARY KEY,
    stream_created text NOT NULL,     -- the stream's creation time: one made anew numbers from 1 again
    sequence bigint NOT NULL,         -- every message up to this stream sequence is stored
    updated_at timestamptz NOT NULL DEFAULT now()
);
