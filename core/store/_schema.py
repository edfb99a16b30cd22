"""The latest schema, as replaying every migration on a blank file leaves it (generated:
`python -m tests.store.schema_snapshot > core/store/_schema.py`; tests/store/test_db.py
checks it). `core.store.db` creates a brand-new file from it in one transaction."""

MIGRATIONS = (
    'm001_initial',
    'm002_history_indexes',
    'm010_result_metrics',
    'm011_votes',
    'm012_batch_stop_reason',
    'm013_batch_runner_state',
    'm014_contenders',
    'm015_version_indexes',
)

STATEMENTS = (
    'CREATE TABLE "_sqlite_migrations" (\n   "id" INTEGER PRIMARY KEY,\n   "migration_set" TEXT,\n   "name" TEXT,\n   "applied_at" TEXT\n)',
    'CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"\n    ON "_sqlite_migrations" ("migration_set", "name")',
    'CREATE TABLE "reference_photos" (\n   "id" TEXT PRIMARY KEY,\n   "sha256" TEXT NOT NULL,\n   "role" TEXT NOT NULL,\n   "owner" TEXT,\n   "original_name" TEXT,\n   "content_type" TEXT NOT NULL,\n   "width" INTEGER,\n   "height" INTEGER,\n   "size_bytes" INTEGER,\n   "storage_backend" TEXT NOT NULL,\n   "storage_path" TEXT NOT NULL,\n   "public_url" TEXT,\n   "created_at" TEXT NOT NULL,\n   "created_by" TEXT,\n   "archived_at" TEXT\n)',
    'CREATE UNIQUE INDEX "idx_reference_photos_sha256"\n    ON "reference_photos" ("sha256")',
    'CREATE INDEX "idx_reference_photos_created_at"\n    ON "reference_photos" ("created_at")',
    'CREATE TABLE "batches" (\n   "id" TEXT PRIMARY KEY,\n   "name" TEXT NOT NULL,\n   "created_at" TEXT NOT NULL,\n   "created_by" TEXT,\n   "plan_json" TEXT,\n   "status" TEXT NOT NULL,\n   "dry_run" INTEGER DEFAULT 0,\n   "concurrency" INTEGER,\n   "cancel_requested" INTEGER DEFAULT 0,\n   "runner_pid" INTEGER,\n   "runner_host" TEXT,\n   "heartbeat_at" TEXT,\n   "started_at" TEXT,\n   "finished_at" TEXT,\n   "request_count" INTEGER DEFAULT 0,\n   "estimated_cost" REAL\n, "stop_reason" TEXT, "stopped_at" TEXT, "launched_at" TEXT, "fal_unreachable_since" TEXT)',
    'CREATE INDEX "idx_batches_created_at"\n    ON "batches" ("created_at")',
    'CREATE TABLE "groups" (\n   "id" TEXT PRIMARY KEY,\n   "batch_id" TEXT REFERENCES "batches"("id"),\n   "variant_key" TEXT,\n   "prompt" TEXT NOT NULL,\n   "options_json" TEXT,\n   "seed" INTEGER,\n   "image_size" TEXT,\n   "reference_ids" TEXT,\n   "created_at" TEXT NOT NULL\n)',
    'CREATE INDEX "idx_groups_batch_id"\n    ON "groups" ("batch_id")',
    'CREATE TABLE "requests" (\n   "id" TEXT PRIMARY KEY,\n   "batch_id" TEXT REFERENCES "batches"("id"),\n   "group_id" TEXT REFERENCES "groups"("id"),\n   "endpoint" TEXT NOT NULL,\n   "prompt" TEXT,\n   "options_json" TEXT,\n   "seed" INTEGER,\n   "image_size" TEXT,\n   "reference_ids" TEXT,\n   "payload_json" TEXT NOT NULL,\n   "payload_hash" TEXT NOT NULL,\n   "status" TEXT NOT NULL,\n   "dry_run" INTEGER DEFAULT 0,\n   "fal_request_id" TEXT,\n   "status_url" TEXT,\n   "response_url" TEXT,\n   "cancel_url" TEXT,\n   "queue_position" INTEGER,\n   "created_at" TEXT NOT NULL,\n   "submitted_at" TEXT,\n   "queued_at" TEXT,\n   "started_at" TEXT,\n   "completed_at" TEXT,\n   "queue_time_s" REAL,\n   "inference_time_s" REAL,\n   "total_time_s" REAL,\n   "http_status" INTEGER,\n   "error_type" TEXT,\n   "error_message" TEXT,\n   "estimated_cost" REAL,\n   "response_json" TEXT,\n   "logs_json" TEXT,\n   "rerun_of" TEXT REFERENCES "requests"("id"),\n   "created_by" TEXT,\n   "attempts" INTEGER DEFAULT 0\n, "contender_id" TEXT)',
    'CREATE INDEX "idx_requests_batch_id_status"\n    ON "requests" ("batch_id", "status")',
    'CREATE INDEX "idx_requests_endpoint_created_at"\n    ON "requests" ("endpoint", "created_at")',
    'CREATE INDEX "idx_requests_status_created_at"\n    ON "requests" ("status", "created_at")',
    'CREATE INDEX "idx_requests_created_at"\n    ON "requests" ("created_at")',
    'CREATE INDEX "idx_requests_group_id"\n    ON "requests" ("group_id")',
    'CREATE INDEX "idx_requests_fal_request_id"\n    ON "requests" ("fal_request_id")',
    'CREATE INDEX "idx_requests_submitted_at"\n    ON "requests" ("submitted_at")',
    'CREATE TABLE "result_images" (\n   "id" TEXT PRIMARY KEY,\n   "request_id" TEXT NOT NULL REFERENCES "requests"("id"),\n   "idx" INTEGER,\n   "fal_url" TEXT,\n   "storage_backend" TEXT,\n   "storage_path" TEXT,\n   "sha256" TEXT,\n   "width" INTEGER,\n   "height" INTEGER,\n   "content_type" TEXT,\n   "size_bytes" INTEGER,\n   "nsfw" INTEGER,\n   "created_at" TEXT NOT NULL\n, "face_status" TEXT, "face_distance" REAL, "faces_reference" INTEGER, "faces_output" INTEGER, "phash_distance" INTEGER, "ciede2000" REAL, "ssim" REAL, "metrics_reference_id" TEXT, "metrics_version" TEXT, "metrics_at" TEXT, "metrics_error" TEXT, "requested_width" INTEGER, "requested_height" INTEGER, "pixel_width" INTEGER, "pixel_height" INTEGER, "seed_sent" INTEGER, "seed_returned" INTEGER, "check_flags" TEXT, "checked_at" TEXT)',
    'CREATE UNIQUE INDEX "idx_result_images_request_id_idx"\n    ON "result_images" ("request_id", "idx")',
    'CREATE INDEX "idx_requests_batch_id_created_at"\n    ON "requests" ("batch_id", "created_at")',
    'CREATE INDEX "idx_requests_rerun_of"\n    ON "requests" ("rerun_of")',
    'CREATE INDEX idx_result_images_metrics_pending ON result_images(request_id) WHERE metrics_at IS NULL',
    'CREATE TABLE "votes" (\n   "id" TEXT PRIMARY KEY,\n   "group_id" TEXT NOT NULL REFERENCES "groups"("id"),\n   "rater" TEXT NOT NULL,\n   "left_request_id" TEXT NOT NULL REFERENCES "requests"("id"),\n   "right_request_id" TEXT NOT NULL REFERENCES "requests"("id"),\n   "verdict" TEXT NOT NULL,\n   "winner" TEXT,\n   "note" TEXT,\n   "created_at" TEXT NOT NULL\n)',
    'CREATE INDEX "idx_votes_group_id_rater"\n    ON "votes" ("group_id", "rater")',
    'CREATE INDEX "idx_votes_rater_created_at"\n    ON "votes" ("rater", "created_at")',
    'CREATE TABLE "contenders" (\n   "id" TEXT PRIMARY KEY,\n   "endpoint" TEXT NOT NULL,\n   "params_json" TEXT NOT NULL\n)',
    'CREATE INDEX idx_requests_batch_contender ON requests(batch_id, contender_id)',
    'CREATE INDEX "idx_requests_completed_at"\n    ON "requests" ("completed_at")',
    'CREATE INDEX "idx_result_images_metrics_at"\n    ON "result_images" ("metrics_at")',
    'CREATE INDEX "idx_result_images_checked_at"\n    ON "result_images" ("checked_at")',
)
