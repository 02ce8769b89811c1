package assemble

// SetMemLimits sets, for a test, the room a memory scratch needs for a
// step to start there and the room under which it counts as full.
func SetMemLimits(minFree, fullBelow int64) (restore func()) {
	oldMin, oldFull := memMinFree, memFullBelow
	memMinFree, memFullBelow = minFree, fullBelow
	return func() { memMinFree, memFullBelow = oldMin, oldFull }
}
