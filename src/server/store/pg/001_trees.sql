-- One table per tree of the store: a key and a value, both the bytes the embedded store keeps
-- (keys sort byte by byte, as sled's do). Values are written in place (an UPDATE per change),
-- so autovacuum has dead row versions to reclaim on the busy tables: see the README.
CREATE TABLE orange_tasks (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_queue (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_by_agent (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_output (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_agents (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_deadlines (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_finished (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_cancels (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_jobs (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_job_targets (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_job_links (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_jobs_done (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_job_inputs (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_features (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_jobs_open (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_seen (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_tokens (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_audit (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_agent_audit (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_facts (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_meta (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_files (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_file_meta (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_operators (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE orange_approved_labels (key bytea PRIMARY KEY, value bytea NOT NULL);
-- Ids (task, job and queue numbers): one sequence for every server.
CREATE SEQUENCE orange_ids;
