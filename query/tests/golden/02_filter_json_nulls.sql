-- Filter and project over schemaless JSON: nested access, missing fields are NULL,
-- three-valued logic, CASE, CAST, COALESCE / IFNULL / NULLIF, string and date functions.
CREATE STREAM events;
SELECT id, payload->'user'->>'name' AS name, payload#>>'{tags,0}' AS tag, payload.user.age AS age,
       CASE WHEN score > 10 THEN 'high' WHEN score IS NULL THEN 'none' ELSE 'low' END AS level,
       score::double / 4 AS quarter, CAST('7' AS INTEGER) + 1 AS eight,
       COALESCE(nick, 'anon') AS nick, IFNULL(score, 0) AS s, NULLIF(score, 3) AS n3,
       UPPER(TRIM(city)) || '!' AS shout, DATE_STR(ts) AS day, TIME_STR(ts) AS time
FROM events WHERE score IS NULL OR score > 2 EMIT CHANGES;
--> query 1
INSERT INTO events (id, payload, score, city, ts) VALUES (1, '{}', 3, ' oslo ', 1700000000123);
--> q1 + {"id":1,"name":null,"tag":null,"age":null,"level":"low","quarter":0.75,"eight":8,"nick":"anon","s":3,"n3":null,"shout":"OSLO!","day":"2023-11-14","time":"22:13:20.123"}
INSERT INTO events (id, score, city, ts) VALUES (2, 1, 'x', 0);
INSERT INTO events (id, city, ts) VALUES (3, 'lima', 86400000);
--> q1 + {"id":3,"name":null,"tag":null,"age":null,"level":"none","quarter":null,"eight":8,"nick":"anon","s":0,"n3":null,"shout":"LIMA!","day":"1970-01-02","time":"00:00:00.000"}
-- NULL > 2 is unknown and unknown OR false is unknown: filtered out.
SELECT id FROM events WHERE NOT (score > 2) EMIT CHANGES;
--> query 2
INSERT INTO events (id) VALUES (4);
--> q1 + {"id":4,"name":null,"tag":null,"age":null,"level":"none","quarter":null,"eight":8,"nick":"anon","s":0,"n3":null,"shout":null,"day":null,"time":null}
INSERT INTO events (id, score) VALUES (5, 0);
--> q2 + {"id":5}
-- A type mismatch on a record skips it and counts it.
INSERT INTO events (id, score) VALUES (6, 'abc');
-- @metrics 2
--> query 2: in 3, late 0, failed 1 (type mismatch in >: expected a value comparable with string "abc", found integer 2)
