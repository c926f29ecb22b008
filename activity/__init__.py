"""Activity: one record per API request (recording: the ASGI middleware) and per execution attempt, published
off the request path (publisher) through JetStream (transport), stored with its hourly rollups by one consumer
(consumer, store), and read back as feeds, searches and summaries (queries). The record itself: records."""
