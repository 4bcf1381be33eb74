-- ImportAttempts stores many attempts under one request id (AIP-155): a retry gets
-- every one of them back, so a request id may now name several attempts.
ALTER TABLE requests DROP CONSTRAINT requests_pkey;
ALTER TABLE requests ADD PRIMARY KEY (principal, request_id, attempt_id);
