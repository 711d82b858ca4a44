"""arrivals"""
