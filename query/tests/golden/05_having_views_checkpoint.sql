-- HAVING retractions, a view answering pull queries, and a checkpoint in the middle.
CREATE STREAM orders;
SELECT item, COUNT(*) AS n FROM orders GROUP BY item HAVING COUNT(*) < 3 EMIT CHANGES;
--> query 1
CREATE VIEW totals AS SELECT item, COUNT(*) AS n, SUM(qty) AS qty, AVG(qty) AS avg, MIN(qty) AS lo, MAX(qty) AS hi FROM orders GROUP BY item;
--> query 2
INSERT INTO orders (item, qty) VALUES ('pen', 1), ('ink', 5), ('pen', 2);
--> q1 + {"item":"pen","n":1}
--> q1 + {"item":"ink","n":1}
--> q1 + {"item":"pen","n":2}
-- The third pen: HAVING COUNT(*) < 3 stops holding, the row is retracted.
INSERT INTO orders (item, qty) VALUES ('pen', 3);
--> q1 - {"item":"pen","n":2}
SELECT * FROM totals;
--> item | n | qty | avg | lo | hi
--> "pen" | 3 | 6 | 2.0 | 1 | 3
--> "ink" | 1 | 5 | 5.0 | 5 | 5
SELECT item, qty FROM totals WHERE n > 1 ORDER BY qty DESC LIMIT 1;
--> item | qty
--> "pen" | 6
SELECT nope FROM totals;
--> error: unknown column `nope` at 1:8, known columns: item, n, qty, avg, lo, hi
-- @restart
INSERT INTO orders (item, qty) VALUES ('ink', NULL), ('cap', 4);
SELECT * FROM totals ORDER BY item;
--> item | n | qty | avg | lo | hi
--> "cap" | 1 | 4 | 4.0 | 4 | 4
--> "ink" | 2 | 5 | 5.0 | 5 | 5
--> "pen" | 3 | 6 | 2.0 | 1 | 3
SHOW VIEWS;
--> name | query
--> "totals" | 2
SHOW QUERIES;
--> id | status | sink | sql
--> 2 | "running" | "view totals" | "CREATE VIEW totals AS SELECT item, COUNT(*) AS n, SUM(qty) AS qty, AVG(qty) AS avg, MIN(qty) AS lo, MAX(qty) AS hi FROM orders GROUP BY item"
DROP STREAM orders;
--> error: `orders` is used by query 2; terminate it first
DROP VIEW totals;
SHOW VIEWS;
--> name | query
-- TOPK(x, k): the k greatest values of each group, greatest first; it survives a checkpoint.
CREATE STREAM scores;
CREATE VIEW best AS SELECT player, TOPK(points, 3) AS top, COUNT(*) AS n FROM scores GROUP BY player;
--> query 3
INSERT INTO scores (player, points) VALUES ('p', 5), ('p', 9), ('p', NULL), ('p', 1), ('q', 2);
-- @restart
INSERT INTO scores (player, points) VALUES ('p', 7), ('p', 9);
SELECT * FROM best;
--> player | top | n
--> "p" | [9,9,7] | 6
--> "q" | [2] | 1
SELECT TOPK(points, 0) FROM scores GROUP BY player EMIT CHANGES;
--> error: syntax error at 1:8: TOPK's k is an integer in 1..=1000
SELECT TOPK(points) FROM scores GROUP BY player EMIT CHANGES;
--> error: syntax error at 1:8: TOPK takes a value and k: TOPK(x, 3)
