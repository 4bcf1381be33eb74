-- Trainer identity (issue 25): a quarantine follows the principal (the trainer token),
-- not the address; a checkpoint remembers whose trainer stored it; and the credential
-- the gateway presents to a trainer is no longer kept in clear.

-- A principal whose trainer lied gets no work on any of its trainers, at any address,
-- registered before or after, until `until`. Anyone holding the token can register a
-- trainer at any port, so the token is the only identity a quarantine can hold on to.
-- `address` and `reason` say which trainer lied and how, for the admin who reads this.
CREATE TABLE trainer_quarantines (
    principal  text        PRIMARY KEY,
    until      timestamptz NOT NULL,
    reason     text        NOT NULL,
    address    text        NOT NULL DEFAULT '',
    since      timestamptz NOT NULL DEFAULT now()
);
-- The quarantines of 0004 were per address: each becomes its principal's.
INSERT INTO trainer_quarantines (principal, until, reason, address)
SELECT DISTINCT ON (principal) principal, quarantined_until, quarantine_reason, address
FROM trainers WHERE quarantined_until > now()
ORDER BY principal, quarantined_until DESC;
-- From now on `trainers.quarantined_until` and `quarantine_reason` only record which
-- address lied (the principal's row decides).

-- The principal of the trainer that streamed each checkpoint chunk: the one holding the
-- attempt's lease as it arrived. A checkpoint that a later trainer refuses (planted,
-- unreadable) is that principal's lie. Set by a trigger, so it is written in the same
-- statement as the chunk, whoever writes chunks and however.
ALTER TABLE artifacts ADD COLUMN stored_by text NOT NULL DEFAULT '';

CREATE FUNCTION artifacts_stored_by() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT t.principal INTO NEW.stored_by
    FROM attempts a JOIN trainers t ON t.address = a.trainer
    WHERE a.id = NEW.attempt_id;
    NEW.stored_by := COALESCE(NEW.stored_by, '');
    RETURN NEW;
END
$$;

CREATE TRIGGER artifacts_stored_by BEFORE INSERT ON artifacts FOR EACH ROW
    WHEN (NEW.kind IN ('checkpoint', 'checkpoint.upload'))
    EXECUTE FUNCTION artifacts_stored_by();

-- The credential a trainer obeys is HMAC-SHA256(key, salt, address) under a key kept
-- outside the database (gateway/trainer_credentials.py); a row keeps the salt and the
-- fingerprint of the key, never the credential.
ALTER TABLE trainers
    ADD COLUMN credential_salt bytea,
    ADD COLUMN credential_key  text NOT NULL DEFAULT '';
-- The credentials kept in clear until now are dropped: such a trainer is told to
-- register again at its next heartbeat, and gets a credential of the new kind.
UPDATE trainers SET credential = '';
-- The old column stays, empty, while replicas of the last version may still run (they
-- read it); none can put a credential back in it.
ALTER TABLE trainers ADD CONSTRAINT trainers_no_clear_credential CHECK (credential = '');
