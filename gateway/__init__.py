"""The metalearn gateway: keeps attempts and images in PostgreSQL and serves them over gRPC.

How it is put together (docs/architecture.md §2, §5, §6):

server.py      create_server: every service, store and feature assembled, and wired
config.py      GatewayConfig and Limits (frozen), from flags and the environment
store/         every SQL statement, the migrations, the watched pool (two lanes)
events.py      the event hub: LISTEN/NOTIFY for attempts' events; features register
               their own channels with it
epochs.py      the path every epoch takes: stored once, told, judged by epoch watchers
dispatcher.py  claims queued work for trainers and streams it; outcomes.py records how
               each run ended
workers.py     processes for CPU work (study checks and asks, import checks)
auth/          tokens, roles, the interceptor, per-principal budgets, TokenService
attempts/      AttemptService: validation, conversions, imports, downloads
datasets/      DatasetService: images
trainers/      trainers as the gateway sees them: registry, checks of what they send,
               credentials, the channel to them, their uploads and file reads
studies/       StudyService and the study driver (the maths: learning/studies)
tasks/         TaskService, the profiler, warm starts (the maths: learning/tasks)
curves/        CurveService, prognoses and refits (the maths: learning/curves)
names.py, pagination.py, slots.py, request_sizes.py   rules every service shares
embedded.py, inprocess.py   an embedded PostgreSQL; a gateway in a thread (tests, bench)
"""
