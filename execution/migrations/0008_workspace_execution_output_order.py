from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("execution", "0006_runpath_worker_lease"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="output_order",
            field=models.TextField(blank=True, default=""),
        ),
    ]
