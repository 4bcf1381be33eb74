-- Each stored checkpoint or weights file keeps the sha256 its trainer sent and the
-- gateway verified, on every row of the file: a download streams the file row by row
-- and can send its digest first without reading the file twice. Files stored before
-- this have none (NULL): they are hashed once, as they are read.
ALTER TABLE artifacts ADD COLUMN sha256 bytea CHECK (sha256 IS NULL OR length(sha256) = 32);
