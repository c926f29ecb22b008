"""The executor: runs pending runs against their endpoints (runner), calling them over HTTP (http) only at
addresses the outbound policy allows (outbound)."""
