"""Feedback from people: verdicts and corrected labels on stored predictions and alerts, what to review next, quality
estimated from the verdicts, and the promotion gate's checks that read them."""
