-- Sends `depth` requests back to back on each connection (HTTP/1.1 pipelining), as TechEmpower's
-- plaintext test does. wrk counts every response, so Requests/sec stays per request; its
-- latencies are per batch of `depth`.
--   wrk ... -s pipeline.lua http://127.0.0.1:PORT/ -- 16
init = function(args)
   local depth = tonumber(args[1]) or 1
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format()
   end
   req = table.concat(r)
end

request = function()
   return req
end
