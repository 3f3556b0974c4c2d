"""Thin drivers that wire tropemix transforms into runnable pipelines."""
