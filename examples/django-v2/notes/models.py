from django.db import models


class Note(models.Model):
    # db_default: the database fills the column for code that does not know it, such as the first release after
    # a forced rollback (`fab rollback --force`: the database keeps this migration).
    text = models.CharField(max_length=200)
    author = models.CharField(max_length=100, default="", db_default="", blank=True)
    created = models.DateTimeField(auto_now_add=True)
