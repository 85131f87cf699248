-- Deliberately empty, to keep the migration numbers of both backends in step: several
-- records services share only a PostgreSQL database (PostgreSQL's 0009 adds the staging
-- table and the unique previous hash). A SQLite database has one service, whose ledger
-- is the one writer; its tamper tests forge rows that a unique index would refuse.
SELECT 1;
