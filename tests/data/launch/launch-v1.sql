BEGIN TRANSACTION;
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    instance TEXT,
    mig_uuid TEXT,
    start_at REAL,
    end_at REAL,
    outcome TEXT,
    exit_code INTEGER,
    signal INTEGER,
    peak_mib INTEGER,
    error TEXT,
    PRIMARY KEY (run_id, attempt)
);
INSERT INTO "attempts" VALUES('medium-24a6a06b24',1,'0:1g.10gb@0','MIG-94777480-6a94-5811-b9ca-7252795b138a',1.79666672467180347444e+09,1.79666673125045847896e+09,'succeeded',0,NULL,8192,NULL);
INSERT INTO "attempts" VALUES('large-128b52ce48',1,'0:3g.40gb@4','MIG-df351223-ef2a-526c-a8fb-477761119fed',1.79666672467180347444e+09,1.79666673258489394192e+09,'succeeded',0,NULL,28672,NULL);
INSERT INTO "attempts" VALUES('small-45666c1240',1,'1:1g.10gb@0','MIG-e86a6ce0-c3ea-5d08-97f8-020f67a8ef74',1.79666672467180347444e+09,1.79666673061471819875e+09,'succeeded',0,NULL,1536,NULL);
CREATE TABLE launcher (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER,
    create_time REAL,
    started_at REAL,
    heartbeat_at REAL,
    ended_at REAL,
    state TEXT,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    stop_reason TEXT,
    flapping TEXT,
    exit_code INTEGER,
    cpu_s REAL,
    lend INTEGER,
    drain INTEGER,
    plan_file TEXT,
    log_file TEXT
);
INSERT INTO "launcher" VALUES(1,1816,1796666723.27,1.79666672466564679138e+09,1.7966667352268958092e+09,1.79666674021395802495e+09,'exited',0,NULL,NULL,0,1.383418,1,0,'/tmp/toydb/toy.plan.yaml',NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema','1');
INSERT INTO "meta" VALUES('created_at','1796666724.663666');
INSERT INTO "meta" VALUES('plan_sha256','4bd70d48a88f663b9ea6e48363240a0385a50baafac7a8c3dc1ff4cb25a5b5ed');
INSERT INTO "meta" VALUES('plan_file','/tmp/toydb/toy.plan.yaml');
INSERT INTO "meta" VALUES('sweep','toy-sweep');
INSERT INTO "meta" VALUES('sweep_started_at','1796666724.6656468');
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    ord INTEGER NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL CHECK (state IN ('queued', 'starting', 'running', 'succeeded', 'failed', 'oom', 'interrupted', 'abandoned', 'unknown')),
    attempt INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    home TEXT,
    queue TEXT,
    rank INTEGER NOT NULL DEFAULT 0,
    instance TEXT,
    mig_uuid TEXT,
    memory_mib INTEGER NOT NULL DEFAULT 0,
    need_mib INTEGER NOT NULL DEFAULT 0,
    shim_pid INTEGER,
    shim_create_time REAL,
    child_pid INTEGER,
    child_pgid INTEGER,
    queued_at REAL,
    start_at REAL,
    end_at REAL,
    not_before REAL,
    exit_code INTEGER,
    signal INTEGER,
    peak_mib INTEGER,
    instance_mib INTEGER,
    last_error TEXT,
    updated_at REAL
);
INSERT INTO "runs" VALUES('medium-24a6a06b24',0,'medium','succeeded',1,0,'0:1g.10gb@0','0:1g.10gb@0',0,'0:1g.10gb@0','MIG-94777480-6a94-5811-b9ca-7252795b138a',9216,9216,NULL,NULL,1831,1831,1.79666672466564679138e+09,1.79666672467180347444e+09,1.79666673125045847896e+09,NULL,0,NULL,8192,9728,NULL,1.79666673139053058617e+09);
INSERT INTO "runs" VALUES('large-128b52ce48',4,'large','succeeded',1,0,'0:3g.40gb@4','0:3g.40gb@4',0,'0:3g.40gb@4','MIG-df351223-ef2a-526c-a8fb-477761119fed',30720,30720,NULL,NULL,1838,1838,1.79666672466564679138e+09,1.79666672467180347444e+09,1.79666673258489394192e+09,NULL,0,NULL,28672,40192,NULL,1.79666673263074612616e+09);
INSERT INTO "runs" VALUES('small-45666c1240',5,'small','succeeded',1,0,'1:1g.10gb@0','1:1g.10gb@0',0,'1:1g.10gb@0','MIG-e86a6ce0-c3ea-5d08-97f8-020f67a8ef74',2048,2048,NULL,NULL,1839,1839,1.79666672466564679138e+09,1.79666672467180347444e+09,1.79666673061471819875e+09,NULL,0,NULL,1536,9728,NULL,1.79666673074264574049e+09);
INSERT INTO "runs" VALUES('oom-moved',3,'g','running',2,0,'0:1g.10gb@0','0:3g.40gb@4',0,'0:3g.40gb@4','MIG-x',9000,20000,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,1.79666674875659775727e+09);
INSERT INTO "runs" VALUES('never-started',4,'','queued',0,0,'1:1g.10gb@3','1:1g.10gb@3',0,NULL,NULL,0,0,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,1.79666674875659775727e+09);
INSERT INTO "runs" VALUES('bench-waiting',5,'','queued',0,0,NULL,'*',0,NULL,NULL,5000,5000,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,1.79666674875659775727e+09);
INSERT INTO "runs" VALUES('bench-oom-unplaceable',6,'','failed',0,0,NULL,NULL,0,'0:7g.80gb@0',NULL,0,0,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,'needs more',1.79666674875659775727e+09);
COMMIT;
