-- wrk script: POST a 64 KiB body with the CSRF header and the auth cookie;
-- it fits server.client_body_buffer_bytes, so tokenjar reads it whole before
-- it takes an API connection.
wrk.method = "POST"
wrk.body = string.rep("x", 64 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["x-csrf"] = "1"
