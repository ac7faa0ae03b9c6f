from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="note",
            name="author",
            field=models.CharField(blank=True, db_default="", default="", max_length=100),
        ),
    ]
