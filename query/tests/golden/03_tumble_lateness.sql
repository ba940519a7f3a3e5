-- TUMBLE with a grace period: out-of-order records within the lateness are accepted, a
-- record for a final window is dropped and counted; the edge is exact (watermark = end is final).
CREATE STREAM clicks WITH (TIMESTAMP = 'ts');
SELECT user, COUNT(*) AS n, window_start, window_end
FROM TUMBLE(clicks, INTERVAL 10 SECOND) GROUP BY user GRACE PERIOD INTERVAL 5 SECOND EMIT FINAL;
--> query 1
SELECT user, COUNT(*) AS n, window_start FROM TUMBLE(clicks, INTERVAL '10' SECOND) GROUP BY user
GRACE PERIOD INTERVAL 5 SECOND EMIT CHANGES;
--> query 2
INSERT INTO clicks (user, ts) VALUES ('a', 1000), ('a', 9999), ('b', 12000);
--> q2 + {"user":"a","n":1,"window_start":0}
--> q2 + {"user":"a","n":2,"window_start":0}
--> q2 + {"user":"b","n":1,"window_start":10000}
-- Out of order but within the grace: watermark is 12000 - 5000 = 7000 < 10000.
INSERT INTO clicks (user, ts) VALUES ('a', 5000);
--> q2 + {"user":"a","n":3,"window_start":0}
-- Watermark 15000 - 5000 = 10000 reaches the end of [0, 10000): final, emitted once.
INSERT INTO clicks (user, ts) VALUES ('b', 15000);
--> q1 + {"user":"a","n":3,"window_start":0,"window_end":10000}
--> q2 + {"user":"b","n":2,"window_start":10000}
-- Late: [0, 10000) is final.
INSERT INTO clicks (user, ts) VALUES ('a', 9999);
-- Not late: [10000, 20000) is open.
INSERT INTO clicks (user, ts) VALUES ('a', 10000);
--> q2 + {"user":"a","n":1,"window_start":10000}
INSERT INTO clicks (user, ts) VALUES ('c', 40000);
--> q1 + {"user":"a","n":1,"window_start":10000,"window_end":20000}
--> q1 + {"user":"b","n":2,"window_start":10000,"window_end":20000}
--> q2 + {"user":"c","n":1,"window_start":40000}
-- @metrics 1
--> query 1: in 8, late 1, failed 0
-- @metrics 2
--> query 2: in 8, late 1, failed 0
