-- wrk script: POST a 1 MiB body with the CSRF header and the auth cookie;
-- larger than server.client_body_buffer_bytes, so tokenjar streams it over
-- its upload pool instead of reading it whole first.
wrk.method = "POST"
wrk.body = string.rep("x", 1024 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["x-csrf"] = "1"
