"""Every sentence a user reads: CLI errors, Slack answers, verdict explanations.

Kept in one module so wording stays consistent and no secret can slip into a
message by accident: functions here take values, never credentials.
"""
