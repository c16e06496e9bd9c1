package replicate

// Test helpers for the external test package (replicate_test).
var WriteRandom = writeRandom
