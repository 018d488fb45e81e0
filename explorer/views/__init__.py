"""Views: pure functions from a record (`Trace`) to something to look at. They never touch a model."""
