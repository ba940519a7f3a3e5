-- Statements that parse, and errors that name the position, the stream, the column, the type.
CREATE STREAM weather WITH (SHARDS = 4, REPLICATE = 3, DURATION = INTERVAL 7 DAY);
SHOW STREAMS;
--> name | timestamp | grace_ms
--> "weather" | null | null
SELECT * FROM nowhere EMIT CHANGES;
--> error: unknown stream or view `nowhere` at 1:15
SELECT city
FROM weather WHERE (;
--> error: syntax error at 2:21: Expected: an expression, found: EOF
SELECT city FROM weather EMIT SOMETIMES;
--> error: syntax error at 1:26: expected CHANGES or FINAL after EMIT
CREATE STREAM weather;
--> error: stream `weather` already exists
SELECT 'a' + 1 FROM weather EMIT CHANGES;
--> error: type mismatch in +: expected number, found string "a"
SELECT UPPER(1) FROM weather EMIT CHANGES;
--> error: type mismatch in TO_UPPER: expected string, found integer 1
SELECT city, COUNT(*) FROM weather EMIT CHANGES;
--> error: unknown column `city` at 1:8 (not in GROUP BY nor inside an aggregate)
SELECT COUNT(*) FROM weather EMIT FINAL;
--> error: unsupported at 1:1: EMIT FINAL needs a windowed aggregate (TUMBLE, HOP or SESSION with GROUP BY or aggregates)
CREATE STREAM s2 WITH (COLOR = 'red');
--> error: syntax error at 1:24: unknown stream option `COLOR` (SHARDS, REPLICATE, DURATION, TIMESTAMP, GRACE)
INSERT INTO nowhere (a) VALUES (1);
--> error: unknown stream or view `nowhere` at 1:13
TERMINATE QUERY 42;
--> error: unknown query 42
DROP STREAM nope;
--> error: unknown stream or view `nope` at 1:13
DROP STREAM IF EXISTS nope;
EXPLAIN SELECT city, COUNT(*) AS n FROM TUMBLE(weather, INTERVAL '10' SECOND) GROUP BY city EMIT FINAL;
--> plan
--> "source: weather; event time of weather: record timestamp; window: Tumble { size_ms: 10000 }; grace: 0 ms; aggregate: 1 keys, [Count]; emit: final"
