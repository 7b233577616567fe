-- Instructions churn like a queue: each is inserted, then updated two or
-- more times within seconds, and none of those updates can be HOT. Every
-- update leaves a dead row version, and a dead entry in the dispatcher's
-- partial indexes that each claim must step over until a vacuum removes
-- it. At the default threshold (a fifth of the table dead) a table holding
-- a long history would carry millions of them, so vacuum these tables
-- after 1 % instead, and keep their statistics as fresh.
alter table instructions set (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);
alter table requests set (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);
alter table delivery_attempts set (autovacuum_vacuum_scale_factor = 0.02);
