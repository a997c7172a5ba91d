-- Run once by the postgres image on a fresh data directory (docker-compose.yml mounts
-- this folder at /docker-entrypoint-initdb.d). The service's own role and database:
-- it owns its schema, and migrates it at start (DB_AUTO_MIGRATE, on by default).
-- Change the password for anything but a local try-out (and DATABASE_URL with it).
CREATE ROLE cmab LOGIN PASSWORD 'cmab';
CREATE DATABASE cmab OWNER cmab;
-- Nothing else is needed: gen_random_uuid() is built in since PostgreSQL 13, and the
-- job queue's tables and functions come with the migrations.
