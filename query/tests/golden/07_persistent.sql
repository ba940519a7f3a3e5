-- Persistent queries: CREATE STREAM AS SELECT, INSERT INTO ... SELECT, PAUSE / RESUME.
CREATE STREAM readings;
CREATE STREAM hot AS SELECT city, temp FROM readings WHERE temp > 30;
--> query 1
CREATE STREAM log;
INSERT INTO log SELECT city FROM hot;
--> query 2
INSERT INTO readings (city, temp) VALUES ('x', 31), ('y', 20);
--> q1 -> hot + {"city":"x","temp":31}
--> q2 -> log + {"city":"x"}
PAUSE QUERY 1;
--> query 1 paused
INSERT INTO readings (city, temp) VALUES ('z', 40);
RESUME QUERY 1;
--> query 1 resumed
--> q1 -> hot + {"city":"z","temp":40}
--> q2 -> log + {"city":"z"}
INSERT INTO readings (city, temp) VALUES ('w', 41);
--> q1 -> hot + {"city":"w","temp":41}
--> q2 -> log + {"city":"w"}
SHOW QUERIES;
--> id | status | sink | sql
--> 1 | "running" | "stream hot" | "CREATE STREAM hot AS SELECT city, temp FROM readings WHERE temp > 30"
--> 2 | "running" | "stream log" | "INSERT INTO log SELECT city FROM hot"
