"""The challenge's limits, in one place for golf and its trainer (`../shared/docs/parameter-golf-facts.md`).

In the trainer package (the trainer's default wallclock cap is the training budget), so it ships inside the
one-file train_gpt.py; golf's checks, tables and live view import it from here.
"""

BYTES_CAP = 16_000_000  # decimal bytes: the shipped train_gpt.py + the compressed model
TRAIN_BUDGET_S = 600.0  # training on 8×H100
EVAL_BUDGET_S = 600.0  # evaluation, separately, on 8×H100
TIME_BUDGET_S = TRAIN_BUDGET_S  # the two budgets are equal: checks that treat both alike use this
# A wallclock-capped run stops at the first step boundary past the cap (600.038 s in the baseline's log).
TIME_SLACK_S = 1.0
