-- wrk script for driftgate's HTTP benchmark: POST one prebuilt body (its path after "--",
-- a second argument sets extra headers as "Name: value|Name: value"), and print one
-- machine-readable summary line that bench/http_bench.py parses.
local request_bytes

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local body = f:read("*a")
  f:close()
  local headers = {["Content-Type"] = "application/json"}
  if args[2] then
    for pair in string.gmatch(args[2], "[^|]+") do
      local name, value = string.match(pair, "^%s*(.-)%s*:%s*(.-)%s*$")
      headers[name] = value
    end
  end
  request_bytes = wrk.format("POST", nil, headers, body)
end

function request()
  return request_bytes
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
