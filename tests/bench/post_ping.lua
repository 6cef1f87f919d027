-- wrk script for the HTTP edge benchmarks (tests/bench/run.sh).
-- POSTs a JSON body to the URL given on wrk's command line.
--   BENCH_BODY     the body (default "{}")
--   BENCH_API_KEY  sent as X-API-Key when set
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_API_KEY")
if key ~= nil and key ~= "" then
  wrk.headers["X-API-Key"] = key
end
