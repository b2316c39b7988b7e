from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("execution", "0007_monitor_execution_usage"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="output_order",
            field=models.TextField(blank=True, default=""),
        ),
    ]
