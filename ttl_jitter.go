package ticketkeys

// ttlJitterScale scales the settings the ttl jitter rule is applied to:
// ttlJitterMax is the production rule (schedule.TTLJitterMax) of
// rotation_period*k and publish_ahead*k, as if the engine's clock ran k times
// slower for the jitter alone, so that an end-to-end test with periods of a
// minute sees production-sized jitter (30s) under the production rule, and
// the window promise (checkPublishAhead, leadTTLCap) holds for it. Only a
// test build of the plugin (build tag ttljitterscale, ttl_jitter_scale.go)
// sets it, from TICKETKEYS_TEST_TTL_JITTER_SCALE; in the shipped plugin it is
// always 1 and nothing can change it.
var ttlJitterScale = 1
