"""Feeding built data to training and evaluation."""
