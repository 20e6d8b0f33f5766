-- wrk script: pipelined requests, several per write, as in TechEmpower's plaintext test.
--
--   wrk -t1 -c50 -d3s -s Examples/HTTP/pipeline.lua http://127.0.0.1:8080 -- 16 /plaintext
--
-- Arguments after "--": requests per write (default 16), then the path (default /plaintext).
-- wrk counts every response, so its Requests/sec is requests, not writes.

init = function(args)
  local depth = tonumber(args[1]) or 16
  local path = args[2] or "/plaintext"
  local batch = {}
  for i = 1, depth do
    batch[i] = wrk.format("GET", path)
  end
  pipelined = table.concat(batch)
end

request = function()
  return pipelined
end
