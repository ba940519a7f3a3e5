-- RIGHT and FULL joins: an unmatched record is NULL-padded once the watermark passes
-- t + within; a record below the watermark is late for the join.
CREATE STREAM l WITH (TIMESTAMP = 't');
CREATE STREAM r WITH (TIMESTAMP = 't');
SELECT l.k AS lk, r.k AS rk FROM l RIGHT JOIN r ON l.k = r.k WITHIN (INTERVAL 1 SECOND) EMIT CHANGES;
--> query 1
SELECT l.k AS lk, r.k AS rk FROM l FULL JOIN r ON l.k = r.k WITHIN (INTERVAL 1 SECOND) EMIT CHANGES;
--> query 2
INSERT INTO r (k, t) VALUES ('x', 1000);
INSERT INTO l (k, t) VALUES ('y', 1500);
-- 2000 = 1000 + 1000: r's x could still match a left record at 2000; nothing padded yet.
INSERT INTO l (k, t) VALUES ('w', 2000);
-- 2001: the watermark passes 1000 + 1000; x is padded. y (1500 + 1000 = 2500) still waits.
INSERT INTO l (k, t) VALUES ('v', 2001);
--> q1 + {"lk":null,"rk":"x"}
--> q2 + {"lk":null,"rk":"x"}
-- Below the watermark (2001): late, dropped, counted.
INSERT INTO r (k, t) VALUES ('y', 2000);
-- @metrics 1
--> query 1: in 5, late 1, failed 0
