-- One rule for every resource's name (gateway/names.py): letters, digits, '.', '_' and
-- '-', 1 to 128. A study's name leaves room for its trials' "-<number>" (123), and a
-- token's (a principal's) is no longer shorter than an attempt's.
ALTER TABLE studies DROP CONSTRAINT studies_name_check;
ALTER TABLE studies ADD CONSTRAINT studies_name_check CHECK (name ~ '^[A-Za-z0-9._-]{1,123}$');
ALTER TABLE tokens DROP CONSTRAINT tokens_name_check;
ALTER TABLE tokens ADD CONSTRAINT tokens_name_check CHECK (name ~ '^[A-Za-z0-9._-]{1,128}$');
