class Config:
    SECRET_KEY = "kanban-dev-key-93f1c2"
    API_TOKEN = "tb-token-5531"
    REMINDER_SECONDS = 0.3
