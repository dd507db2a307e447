"""When: which email is due, and the metronome (grace delays, cadences, holds)."""
