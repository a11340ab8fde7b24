-- The rehearsal stand-in for a Rails migration (bin/rails db:migrate applies db/migrate in
-- version order, each once, recorded in schema_migrations): the SQL it would run.
CREATE TABLE widgets (id bigserial PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
