-- switchboard's SQLite schema, version 1 (PRAGMA user_version = 1).
--
-- The spec's PostgreSQL tables (shared/spec/phase4-calls.md, "Database Schema") in SQLite
-- types, plus the users, conversations and members its foreign keys point at:
--   * UUIDs are TEXT, lowercase and hyphenated (checked);
--   * timestamps are TEXT, RFC 3339 UTC with milliseconds, `2025-01-10T14:30:00.000Z`, so they
--     sort as text (checked);
--   * JSONB columns are TEXT holding JSON (checked with json_valid; `x IS NULL OR` first, as
--     SQLite before 3.45 says json_valid(NULL) is 0);
--   * every status and type is one of its listed values (checked).
-- Tables are STRICT. The daemon opens the file with foreign_keys = ON and WAL, and applies this
-- file in one transaction. Later versions add migrations after it; they never edit it.
--
-- Value lists are written `x = 'a' OR x = 'b'`, not `x IN ('a', 'b')`: SQLite builds a
-- temporary table for an IN list each time a row is checked, which made every write several
-- times dearer. Queries that should use the partial index calls_live repeat its predicate.

CREATE TABLE users (
  id          TEXT PRIMARY KEY
              CHECK (id GLOB '????????-????-????-????-????????????' AND id NOT GLOB '*[^0-9a-f-]*'),
  name        TEXT CHECK (name IS NULL OR length(name) <= 200),
  email       TEXT CHECK (email IS NULL OR length(email) <= 320),
  created_at  TEXT NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.???Z'),
  updated_at  TEXT NOT NULL CHECK (updated_at GLOB '????-??-??T??:??:??.???Z')
) STRICT;

CREATE TABLE conversations (
  id          TEXT PRIMARY KEY
              CHECK (id GLOB '????????-????-????-????-????????????' AND id NOT GLOB '*[^0-9a-f-]*'),
  name        TEXT CHECK (name IS NULL OR length(name) <= 200),
  created_at  TEXT NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.???Z'),
  updated_at  TEXT NOT NULL CHECK (updated_at GLOB '????-??-??T??:??:??.???Z')
) STRICT;

CREATE TABLE conversation_members (
  conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  created_at      TEXT NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.???Z'),
  PRIMARY KEY (conversation_id, user_id)
) STRICT, WITHOUT ROWID;
-- "Which conversations is this user in" (history without a conversationId), and the cascade.
CREATE INDEX conversation_members_by_user ON conversation_members(user_id);

CREATE TABLE calls (
  id               TEXT PRIMARY KEY
                   CHECK (id GLOB '????????-????-????-????-????????????' AND id NOT GLOB '*[^0-9a-f-]*'),
  conversation_id  TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  type             TEXT NOT NULL DEFAULT 'audio' CHECK (type = 'audio' OR type = 'video' OR type = 'screen'),
  status           TEXT NOT NULL DEFAULT 'initiated'
                   CHECK (status = 'initiated' OR status = 'ringing' OR status = 'active'
                          OR status = 'ended' OR status = 'missed' OR status = 'rejected'
                          OR status = 'failed'),
  initiated_by     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  started_at       TEXT CHECK (started_at GLOB '????-??-??T??:??:??.???Z'),
  ended_at         TEXT CHECK (ended_at GLOB '????-??-??T??:??:??.???Z'),
  duration_seconds INTEGER CHECK (duration_seconds >= 0),
  end_reason       TEXT CHECK (length(end_reason) <= 50),
  sfu_room_id      TEXT CHECK (length(sfu_room_id) <= 255),
  recording_url    TEXT,
  quality_stats    TEXT CHECK (quality_stats IS NULL OR json_valid(quality_stats)),
  created_at       TEXT NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.???Z'),
  updated_at       TEXT NOT NULL CHECK (updated_at GLOB '????-??-??T??:??:??.???Z'),
  -- A live call has no end; a finished one has its end, its duration and its reason.
  CHECK ((status = 'initiated' OR status = 'ringing' OR status = 'active')
         = (ended_at IS NULL AND duration_seconds IS NULL AND end_reason IS NULL)),
  CHECK (status <> 'active' OR started_at IS NOT NULL)
) STRICT;
-- Call history per conversation, newest first.
CREATE INDEX calls_by_conversation ON calls(conversation_id, created_at);
-- The ring-timeout sweep and the restart reconciliation look only at live calls.
CREATE INDEX calls_live ON calls(created_at)
  WHERE status = 'initiated' OR status = 'ringing' OR status = 'active';
CREATE INDEX calls_by_initiator ON calls(initiated_by);

CREATE TABLE call_participants (
  id                 TEXT PRIMARY KEY
                     CHECK (id GLOB '????????-????-????-????-????????????' AND id NOT GLOB '*[^0-9a-f-]*'),
  call_id            TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
  user_id            TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  status             TEXT NOT NULL DEFAULT 'invited'
                     CHECK (status = 'invited' OR status = 'ringing' OR status = 'joined'
                            OR status = 'left' OR status = 'rejected' OR status = 'missed'),
  joined_at          TEXT CHECK (joined_at GLOB '????-??-??T??:??:??.???Z'),
  left_at            TEXT CHECK (left_at GLOB '????-??-??T??:??:??.???Z'),
  ice_candidates     TEXT CHECK (ice_candidates IS NULL OR json_valid(ice_candidates)),
  media_state        TEXT NOT NULL
                     DEFAULT '{"audioEnabled":true,"videoEnabled":true,"screenSharing":false}'
                     CHECK (json_valid(media_state)),
  media_stats        TEXT CHECK (media_stats IS NULL OR json_valid(media_stats)),
  connection_quality TEXT CHECK (connection_quality = 'excellent' OR connection_quality = 'good'
                                 OR connection_quality = 'fair' OR connection_quality = 'poor'),
  created_at         TEXT NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.???Z'),
  updated_at         TEXT NOT NULL CHECK (updated_at GLOB '????-??-??T??:??:??.???Z'),
  UNIQUE (call_id, user_id),
  CHECK (status <> 'joined' OR joined_at IS NOT NULL)
) STRICT;
-- A user's calls (and the cascade); call_id lookups use the UNIQUE index.
CREATE INDEX call_participants_by_user ON call_participants(user_id);

CREATE TABLE turn_credentials (
  id          TEXT PRIMARY KEY
              CHECK (id GLOB '????????-????-????-????-????????????' AND id NOT GLOB '*[^0-9a-f-]*'),
  user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  username    TEXT NOT NULL CHECK (length(username) <= 255),
  credential  TEXT NOT NULL CHECK (length(credential) <= 255),
  expires_at  TEXT NOT NULL CHECK (expires_at GLOB '????-??-??T??:??:??.???Z'),
  created_at  TEXT NOT NULL CHECK (created_at GLOB '????-??-??T??:??:??.???Z')
) STRICT;
-- The cleanup (the spec's cleanup_expired_turn_credentials) and the cascade.
CREATE INDEX turn_credentials_by_expiry ON turn_credentials(expires_at);
CREATE INDEX turn_credentials_by_user ON turn_credentials(user_id);
