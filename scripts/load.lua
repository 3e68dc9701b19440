-- wrk script for scripts/load.py: a mix of GET / and GET /sleep?ms=N on kept-alive
-- connections, counting every request sent and every response received per thread, so the
-- driver can tell lost requests (sent, never answered) from refused new connections.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("is_first", #threads == 1)
end

function init(args)
  sleep_every = tonumber(args[1]) or 4   -- about one request in sleep_every is a /sleep
  sleep_ms = tonumber(args[2]) or 300     -- of sleep_ms/2 to 3*sleep_ms/2 ms
  -- Random, so the connections do not run in lockstep and the signal lands at every point
  -- of the sleeps.
  math.randomseed(os.time() + (is_first and 1 or 2) + math.floor(os.clock() * 1e6))
  sent, sent_sleeps = 0, 0
  answered, ok, not_ok = 0, 0, 0
  closing, sleeps_answered, sleeps_closing = 0, 0, 0
end

function request()
  -- wrk calls request() once on the first thread's state to check the script
  -- (script_verify_request) and never sends that one: do not count it.
  if is_first and not verified then
    verified = true
    return wrk.format("GET", "/")
  end
  sent = sent + 1
  if math.random(sleep_every) == 1 then
    sent_sleeps = sent_sleeps + 1
    local ms = math.random(math.floor(sleep_ms / 2), math.floor(sleep_ms * 3 / 2))
    return wrk.format("GET", "/sleep?ms=" .. ms)
  end
  return wrk.format("GET", "/")
end

function response(status, headers, body)
  answered = answered + 1
  if status == 200 then ok = ok + 1 else not_ok = not_ok + 1 end
  -- The server adds `Connection: close` to every response written once draining began.
  local close = headers["connection"] == "close" or headers["Connection"] == "close"
  if close then closing = closing + 1 end
  if headers["x-slept-ms"] ~= nil then
    sleeps_answered = sleeps_answered + 1
    if close and status == 200 then sleeps_closing = sleeps_closing + 1 end
  end
end

function done(summary, latency, requests)
  local keys = { "sent", "sent_sleeps", "answered", "ok", "not_ok", "closing",
                 "sleeps_answered", "sleeps_closing" }
  local total = {}
  for _, k in ipairs(keys) do total[k] = 0 end
  for _, thread in ipairs(threads) do
    for _, k in ipairs(keys) do total[k] = total[k] + thread:get(k) end
  end
  local e = summary.errors
  local parts = {}
  for _, k in ipairs(keys) do table.insert(parts, string.format('"%s": %d', k, total[k])) end
  for _, k in ipairs({ "connect", "read", "write", "status", "timeout" }) do
    table.insert(parts, string.format('"errors_%s": %d', k, e[k]))
  end
  table.insert(parts, string.format('"wrk_requests": %d', summary.requests))
  table.insert(parts, string.format('"latency_p99_us": %d', latency:percentile(99)))
  io.write("LOAD-RESULT {" .. table.concat(parts, ", ") .. "}\n")
end
