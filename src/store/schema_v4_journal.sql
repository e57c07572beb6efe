-- certroll store: the journal of mutating runs. Every run writes its planned steps before it
-- carries out any of them, and marks each step done in the same transaction as the step's
-- changes, so a run killed at any point is finished by running the same command again.

CREATE TABLE journal_runs (
    id          INTEGER PRIMARY KEY,
    command     TEXT NOT NULL,            -- the command, canonical: verb, flags, targets
    started     INTEGER NOT NULL,
    finished    INTEGER                   -- NULL while the run is open
);
CREATE INDEX journal_runs_by_command ON journal_runs(command, id);

CREATE TABLE journal_steps (
    run_id      INTEGER NOT NULL REFERENCES journal_runs(id),
    seq         INTEGER NOT NULL,
    target      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    description TEXT NOT NULL,
    detail      TEXT NOT NULL,            -- JSON: what was decided when planned
    result      TEXT,                     -- JSON: what the step did (NULL until done)
    done        INTEGER,                  -- when it was done
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX journal_steps_by_target ON journal_steps(target, kind, run_id);
