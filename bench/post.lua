-- wrk: POST the JSON body in $BENCH_BODY with the key in $BENCH_KEY (kept off the command line).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
