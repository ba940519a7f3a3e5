-- Stream-stream joins WITHIN an interval: the edge is inclusive (|dt| = within matches);
-- LEFT JOIN emits the unmatched left record, NULL-padded, once the watermark passes t + within.
CREATE STREAM a WITH (TIMESTAMP = 't');
CREATE STREAM b WITH (TIMESTAMP = 't');
SELECT a.id AS id, a.x AS x, b.y AS y FROM a JOIN b ON a.id = b.id WITHIN (INTERVAL 5 SECOND) EMIT CHANGES;
--> query 1
SELECT a.id AS id, b.y AS y FROM a LEFT JOIN b ON a.id = b.id WITHIN (INTERVAL 5 SECOND) EMIT CHANGES;
--> query 2
INSERT INTO a (id, x, t) VALUES (1, 'one', 10000), (2, 'two', 10000);
-- dt = 5000 = within: matches. dt = 5001: does not.
INSERT INTO b (id, y, t) VALUES (1, 'uno', 15000);
--> q1 + {"id":1,"x":"one","y":"uno"}
--> q2 + {"id":1,"y":"uno"}
INSERT INTO b (id, y, t) VALUES (2, 'dos', 15001);
--> q2 + {"id":2,"y":null}
-- Watermark 20001 > 10000 + 5000: a's record 2 can no longer match; the LEFT JOIN emits it.
INSERT INTO b (id, y, t) VALUES (9, 'x', 20001);
