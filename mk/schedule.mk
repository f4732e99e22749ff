# The schedule package (schedule/): the window wire format and validation, the key-at-instant rule,
# the byte layouts, the reader lag, and the test vectors other readers (the nginx Lua module) check against.

.PHONY: test-schedule fuzz-schedule vectors

test-schedule: ## unit tests (race) of schedule/, including that schedule/testdata/vectors.json is up to date
	$(GO) test -race -count=1 ./schedule/

fuzz-schedule: ## fuzz schedule.Decode for FUZZTIME (default 30s)
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) -parallel 1 ./schedule/

vectors: ## regenerate schedule/testdata/vectors.json from the package
	$(GO) generate ./schedule
