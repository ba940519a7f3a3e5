-- Scalar functions, both INTERVAL spellings, NULL group keys, COUNT(x) skipping NULLs.
CREATE STREAM t WITH (TIMESTAMP = 'ts', GRACE = INTERVAL '2' SECOND);
SELECT ABS(-3) AS a, CEIL(1.2) AS c, FLOOR(-1.5) AS f, ROUND(2.5) AS r, SIGN(-7) AS s,
       IS_INT(x) AS i, IS_STR(x) AS st, IS_MAP(m) AS mp, IS_ARRAY(m->'arr') AS arr,
       TO_STR(x) AS txt, REVERSE('abc') AS rev, STRLEN('héllo') AS len, SUBSTR('streams', 2, 3) AS sub,
       CONCAT('a', NULL, 'b') AS cat, LTRIM('  x') AS lt, x IN (1, 2) AS in_list, x BETWEEN 0 AND 5 AS btw,
       'Runnel' LIKE 'Run%' AS lk, 'RUNNEL' ILIKE 'run_el' AS ilk, m->'arr'->-1 AS last, m#>'{arr,0}' AS first,
       YEAR(ts) AS y, MONTH(ts) AS mo, DAY(ts) AS d, HOUR(ts) AS h, DATE_TRUNC('minute', ts) AS minute, TIMESTAMP_STR(ts) AS iso
FROM t EMIT CHANGES;
--> query 1
INSERT INTO t (x, m, ts) VALUES (1, '{"arr": [10, 20, 30]}'::json, 951782400000);
--> q1 + {"a":3,"c":2.0,"f":-2.0,"r":3.0,"s":-1,"i":true,"st":false,"mp":true,"arr":true,"txt":"1","rev":"cba","len":5,"sub":"tre","cat":"ab","lt":"x","in_list":true,"btw":true,"lk":true,"ilk":true,"last":30,"first":10,"y":2000,"mo":2,"d":29,"h":0,"minute":951782400000,"iso":"2000-02-29T00:00:00.000Z"}
TERMINATE QUERY 1;
--> query 1 terminated
-- NULL is a group key like any other; COUNT(v) and SUM(v) skip NULL v.
SELECT k, COUNT(*) AS all_rows, COUNT(v) AS with_v, SUM(v) AS total, MIN(v) AS lo
FROM TUMBLE(t, INTERVAL 1 MINUTE) GROUP BY k EMIT FINAL;
--> query 2
INSERT INTO t (k, v, ts) VALUES ('a', 1, 0), (NULL, 2, 1000), ('a', NULL, 2000);
INSERT INTO t (v, ts) VALUES (5, 3000);
-- Watermark 62000 - 2000 = 60000 = the window's end: final, exactly now.
INSERT INTO t (k, ts) VALUES ('z', 62000);
--> q2 + {"k":"a","all_rows":2,"with_v":1,"total":1,"lo":1}
--> q2 + {"k":null,"all_rows":2,"with_v":2,"total":7,"lo":2}
-- @metrics 1
--> no query 1
SELECT 1 / 0 FROM t EMIT CHANGES;
--> error: arithmetic error: division by zero
SELECT CAST('x1' AS INTEGER) FROM t EMIT CHANGES;
--> error: type mismatch in CAST: expected integer, found string "x1"
SELECT x FROM TUMBLE(t, INTERVAL 10 FORTNIGHT) EMIT CHANGES;
--> error: syntax error at 1:37: Expected: ), found: FORTNIGHT
