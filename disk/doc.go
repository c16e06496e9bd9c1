// Package disk holds the words every deltasync package shares about a
// disk, so that adapters (localdisk, pageblob, agent) can implement the
// engine's capabilities without importing the engine. It depends on
// nothing of ours.
//
// Today it holds the evidence a resume journal is trusted on: Witness and
// Watch (witness.go). transfer refers to them by alias.
package disk
