-- HOP windows: a record is in size/advance windows. SESSION windows: merge when a record
-- bridges two sessions (the two old rows are retracted, the merged one inserted).
CREATE STREAM s WITH (TIMESTAMP = 't');
SELECT k, COUNT(*) AS n, window_start, window_end FROM HOP(s, INTERVAL 10 SECOND, INTERVAL 5 SECOND) GROUP BY k EMIT CHANGES;
--> query 1
INSERT INTO s (k, t) VALUES ('a', 7000);
--> q1 + {"k":"a","n":1,"window_start":0,"window_end":10000}
--> q1 + {"k":"a","n":1,"window_start":5000,"window_end":15000}
TERMINATE QUERY 1;
--> query 1 terminated
SELECT k, COUNT(*) AS n, SUM(v) AS total, window_start, window_end FROM SESSION(s, INTERVAL 5 SECOND) GROUP BY k GRACE PERIOD INTERVAL 10 SECOND EMIT CHANGES;
--> query 2
INSERT INTO s (k, v, t) VALUES ('a', 1, 1000);
--> q2 + {"k":"a","n":1,"total":1,"window_start":1000,"window_end":6000}
INSERT INTO s (k, v, t) VALUES ('a', 2, 10000);
--> q2 + {"k":"a","n":1,"total":2,"window_start":10000,"window_end":15000}
-- 5999 is 4999 after 1000 and 4001 before 10000: it bridges the two sessions.
INSERT INTO s (k, v, t) VALUES ('a', 4, 5999);
--> q2 - {"k":"a","n":1,"total":1,"window_start":1000,"window_end":6000}
--> q2 - {"k":"a","n":1,"total":2,"window_start":10000,"window_end":15000}
--> q2 + {"k":"a","n":3,"total":7,"window_start":1000,"window_end":15000}
-- Exactly gap after the last record (t = end): a new session, not the same one.
INSERT INTO s (k, v, t) VALUES ('a', 8, 20000);
--> q2 + {"k":"a","n":1,"total":8,"window_start":20000,"window_end":25000}
SELECT k, COUNT(*) AS n, window_start, window_end FROM SESSION(s, INTERVAL 5 SECOND) GROUP BY k EMIT FINAL;
--> query 3
INSERT INTO s (k, t) VALUES ('b', 1000), ('b', 3000), ('b', 8000), ('b', 13000);
--> q2 + {"k":"b","n":1,"total":null,"window_start":8000,"window_end":13000}
--> q3 + {"k":"b","n":2,"window_start":1000,"window_end":8000}
--> q2 + {"k":"b","n":1,"total":null,"window_start":13000,"window_end":18000}
--> q3 + {"k":"b","n":1,"window_start":8000,"window_end":13000}
-- A record that would bridge into a session already final is late (merging would change a
-- window already emitted); one that only reaches the open session merges into it.
CREATE STREAM ss WITH (TIMESTAMP = 't');
SELECT k, COUNT(*) AS n, window_start, window_end FROM SESSION(ss, INTERVAL 5 SECOND) GROUP BY k GRACE PERIOD INTERVAL 3 SECOND EMIT FINAL;
--> query 4
INSERT INTO ss (k, t) VALUES ('a', 1000);
-- Watermark 9500 - 3000 = 6500 >= 6000: [1000, 6000) is final.
INSERT INTO ss (k, t) VALUES ('a', 9500);
--> q4 + {"k":"a","n":1,"window_start":1000,"window_end":6000}
-- [5000, 10000) ends after the watermark but touches the final [1000, 6000): late.
INSERT INTO ss (k, t) VALUES ('a', 5000);
-- [7000, 12000) touches only the open [9500, 14500): merged.
INSERT INTO ss (k, t) VALUES ('a', 7000);
INSERT INTO ss (k, t) VALUES ('a', 30000);
--> q4 + {"k":"a","n":2,"window_start":7000,"window_end":14500}
-- @metrics 4
--> query 4: in 5, late 1, failed 0
-- A HOP puts a record in at most 1000 windows; intervals are bounded (2^50 ms).
SELECT COUNT(*) FROM HOP(s, INTERVAL 1 DAY, INTERVAL 1 SECOND) EMIT CHANGES;
--> error: syntax error at 1:22: window sizes must be positive (and a HOP's advance at most its size, at least 1/1000 of it)
SELECT COUNT(*) FROM TUMBLE(s, INTERVAL 999999999 DAY) EMIT CHANGES;
--> error: syntax error at 1:41: interval too large (at most 2^50 ms)
