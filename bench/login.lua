-- wrk script: log in (the token comes back out of the JSON into a sealed cookie).
wrk.method = "POST"
wrk.body = '{"username":"bench","password":"bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-csrf"] = "1"
